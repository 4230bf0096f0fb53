"""`python -m jobs` is the same as `tenant-reconcile`."""

from jobs.cli import main

if __name__ == "__main__":
    main()
