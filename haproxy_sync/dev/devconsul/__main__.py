"""``python -m haproxy_sync.dev.devconsul [--host H] [--port P]``; the token comes from DEVCONSUL_TOKEN."""

from haproxy_sync.dev.devconsul.cli import main

if __name__ == "__main__":
    main()
