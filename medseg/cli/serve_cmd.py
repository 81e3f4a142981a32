"""``medseg serve RUN_OR_BUNDLE [--host 127.0.0.1] [--port 8000]``: segmentation jobs over HTTP and a web page
(:mod:`medseg.serving`; needs ``pip install 'medseg[serve]'``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional

import typer

from medseg.cli.main import console


def serve(
    run: Path = typer.Argument(..., help="Run folder of `medseg train`, or a bundle of `medseg export`."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on; anything but a loopback address needs a token."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port (0: any free port)."),
    token: Optional[str] = typer.Option(None, help="Bearer token every /v1 request must carry (visible in the process "
                                        "list: prefer --token-file)."),
    token_file: Optional[Path] = typer.Option(None, help="A file holding the bearer token (its first line)."),
    data_dir: Path = typer.Option(Path("medseg_serve_data"), help="Folder for uploads and results (created; kept "
                                  "across restarts)."),
    max_upload: str = typer.Option("1GiB", help="Largest upload accepted, e.g. 512MiB."),
    queue: int = typer.Option(16, min=1, help="Jobs waiting at most; more are refused with 503."),
    keep: str = typer.Option("24h", help="How long finished jobs and their files are kept."),
    max_jobs: int = typer.Option(500, min=1, help="Finished jobs kept at most (the oldest go first)."),
    cors_origin: Optional[list[str]] = typer.Option(None, help="Allow browser pages from this origin (repeatable); "
                                                    "CORS is off by default."),
    tta: bool = typer.Option(False, help="Mirroring test-time augmentation."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
) -> None:
    """Serve the model: a REST API (/v1, OpenAPI at /docs) and a page at / to upload a scan and view its mask."""
    from medseg.cli.predict_cmd import _predictor
    from medseg.errors import ConfigError
    from medseg.planning.memory import parse_bytes
    from medseg.units import parse_duration

    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise ConfigError("medseg serve needs FastAPI and uvicorn", hint="pip install 'medseg[serve]'") from None
    from medseg.serving.app import ServeSettings, create_app

    if token and token_file:
        raise ConfigError("give --token or --token-file, not both")
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, UnicodeDecodeError, IndexError) as e:
            raise ConfigError(f"cannot read the token: {e}", path=token_file) from None
    if token is not None and len(token) < 16:
        raise ConfigError("the token is too short (16 characters at least)",
                          hint="python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    if not _loopback(host) and not token:
        raise ConfigError(f"--host {host} makes the service reachable from other machines: a token is required",
                          hint="add --token-file FILE, or leave out --host (127.0.0.1)")
    settings = ServeSettings(data_dir, token, parse_bytes(max_upload), queue, parse_duration(keep), max_jobs, list(cors_origin or []),
                             ["127.0.0.1", "localhost", "::1", "[::1]"] if _loopback(host) else None)
    predictor, _ = _predictor(run, "auto", tta, device, True, True)
    app = create_app(predictor, settings)
    console.print(f"serving {run} on http://{host}:{port}/ (data in {data_dir}; token {'required' if token else 'off'})",
                  highlight=False, markup=False)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
