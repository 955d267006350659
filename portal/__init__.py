"""The supervisors' web portal: a small Flask application, thin over ``store`` and ``decode``.

:func:`portal.app.create_app` builds it from a :class:`portal.config.PortalConfig`; ``callrec
portal`` (``cli/portal.py``) unlocks the compliance key and serves it.
"""
