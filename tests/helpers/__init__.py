"""What the tests share: the running stack's handle, waiting, worlds of users and providers,
upstream mocks, database servers and installs. Test modules import from here, never from each other."""
