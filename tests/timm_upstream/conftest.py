"""timm's test_models.py, vendored here, is run by tests/test_timm_models.py on dsnet_zoo's models only.

Collected directly, it would parametrize its tests over every model timm registers (about 1,400)."""
collect_ignore = ["test_models.py"]
