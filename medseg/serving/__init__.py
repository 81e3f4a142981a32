"""``medseg serve``: segmentation jobs over HTTP (FastAPI) and a web page to upload a scan and view its mask."""
