"""``gradtrace replay`` and ``gradtrace diff``: register themselves on the ``gradtrace`` command group."""
