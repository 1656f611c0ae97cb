"""`python -m services.reference_provider --port …`."""

from services.reference_provider.app import main

main()
