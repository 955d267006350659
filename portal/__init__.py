"""The supervisors' web portal: a small Flask application, thin over ``store`` and ``decode``.

:func:`callrec.portal.app.create_app` builds it from a :class:`callrec.portal.settings.PortalConfig`;
``callrec portal`` (``cli/commands/portal.py``) unlocks the compliance key and serves it.
"""
