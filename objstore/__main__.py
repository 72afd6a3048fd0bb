"""``python -m objstore``: the same command as the ``objstore`` console script."""

from objstore.cli import main

if __name__ == "__main__":
    main()
