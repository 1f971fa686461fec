"""``python -m utils.data.phantom``: write a phantom dataset (see :func:`utils.data.phantom.build.main`)."""

from .build import main

if __name__ == "__main__":
    raise SystemExit(main())
