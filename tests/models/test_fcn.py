from .base import BaseModelTest


class TestFCN(BaseModelTest):
    name = "fcn"
    # group norm: at stride 32 a 3D test input is a single voxel, which batch norm cannot train on at batch 1
    kwargs = {"features": 4, "convs_per_stage": [1, 1, 2, 1, 1], "norm": "group"}
