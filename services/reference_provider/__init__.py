"""The reference provider: the provider side of Switchboard's contract, for demos, partners and tests."""
