"""Where jobs run: ``local`` (child processes, the embedded default) and, later, ``kubernetes``."""
