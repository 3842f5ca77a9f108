"""Model zoo: builders for every model of the five studies (see ``python create_model.py --list``)."""
from .center_pixel import build_center_pixel, center_index  # noqa: F401
