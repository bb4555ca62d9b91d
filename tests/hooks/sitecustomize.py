"""Installs the test hooks (dwb_testhooks) in every Python the tests start."""

import dwb_testhooks

dwb_testhooks.install()
