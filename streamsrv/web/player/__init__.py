"""The demo player: static HTML, ES modules and vendored browser libraries served at ``/demo/``.

An adapter, like the rest of :mod:`streamsrv.web`: it serves the files under
``static/`` (shipped as package data) with a strict Content-Security-Policy,
and sends browsers that ask for ``/`` there.  It holds no credential, mints
none and calls nothing of the domain: the page talks to the public API like
any other frontend.  Switched by ``STREAMSRV_DEMO_UI``; see
``docs/modules/player.md``.
"""
