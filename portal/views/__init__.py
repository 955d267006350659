"""The portal's pages: login and logout, the calls list, one call, its audio and picture."""
