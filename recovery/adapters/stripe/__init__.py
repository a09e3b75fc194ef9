"""Stripe: the gateway contract, its errors, and the SDK adapter."""
