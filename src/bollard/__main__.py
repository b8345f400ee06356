"""`python -m bollard` runs the CLI (the way `bollard up` starts its child processes)."""

from bollard.cli.main import main

if __name__ == "__main__":
    main()
