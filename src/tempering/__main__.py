"""Allow `python -m tempering`."""

from tempering.cli import main

if __name__ == "__main__":
    main()
