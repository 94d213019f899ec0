"""`python -m service`: serve with settings from the RSD_* environment."""

from service.cli import serve
from service.settings import Settings

serve(Settings())
