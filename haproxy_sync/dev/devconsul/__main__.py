"""``python -m haproxy_sync.dev.devconsul [--host H] [--port P] [ACL options]`` (``--help`` explains them)."""

from haproxy_sync.dev.devconsul.cli import main

if __name__ == "__main__":
    main()
