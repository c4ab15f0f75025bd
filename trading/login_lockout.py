"""The admin login's lockout: django-axes' backend, first in AUTHENTICATION_BACKENDS.

A locked-out (client address, username) pair is refused before its password is checked
(settings: AXES_*, from FORESIGHT_LOGIN_FAILURE_LIMIT and FORESIGHT_LOGIN_LOCKOUT_S).
"""
from __future__ import annotations

from axes.backends import AxesStandaloneBackend


class LoginLockoutBackend(AxesStandaloneBackend):
    """Axes' backend for logins that come with a request (every login form does). A call with
    no request — Django's test ``Client.login``, a script's ``authenticate()`` — has no client
    to lock out; axes would refuse it with an error, here it is left to the next backend."""

    def authenticate(self, request=None, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
