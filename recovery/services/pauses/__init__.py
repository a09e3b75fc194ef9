"""A pause instead of a loss (`retry.end_of_dunning = "offer_pause"`): the final notice's pause
link, the page behind it, carrying the pause out in Stripe, and the notice before billing
resumes."""
