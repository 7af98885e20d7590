"""``python -m rag``: the same as the ``rag`` command."""

from .cli import main

if __name__ == "__main__":
    main()
