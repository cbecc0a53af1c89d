"""The worker side: the Celery task that delivers a batch to Kafka, and what it calls.

tasks.py is the Celery interface, service.py settles each record of a batch, outcomes.py writes
the outcome and dead letters, producers/ holds the Kafka clients. The web side never imports
this package: it publishes task messages by name.
"""
