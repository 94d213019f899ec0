"""Docker HEALTHCHECK: exit 0 when /readyz answers 200 (model loaded and warm, not draining), else 1.

Standard library only: the slim image has no curl, and the check must not import the service.
"""

import os
import sys
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('RSD_PORT', '8000')}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as e:  # refused, timed out, or an HTTP error status such as 503
        print(f"healthcheck: {url}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
