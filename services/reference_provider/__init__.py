"""The reference provider: the provider side of Switchboard's contract, for demos, partners and tests.

Its process (services/reference_provider/app.py) reads these environment variables; whoever starts
it (the demo) names them from here, without loading the provider's web server."""

API_KEY_ENV = "REFERENCE_PROVIDER_API_KEY"
BILLING_TOKEN_ENV = "REFERENCE_PROVIDER_BILLING_TOKEN"
BREAK_ENV = "REFERENCE_PROVIDER_BREAK"
