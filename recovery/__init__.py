"""recovery: win back subscription revenue for businesses that bill with Stripe.

The web application is built by `recovery.app.create_app`; the worker is `recovery.worker`;
the command line is `recovery.cli`. Importing this package loads nothing else.
"""
