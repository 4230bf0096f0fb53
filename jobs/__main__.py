"""`python -m jobs` is the same as `tenant-reconcile`."""

from jobs import main

if __name__ == "__main__":
    main()
