"""``gradtrace check``: registers itself on the ``gradtrace`` command group."""
