"""What the API and the worker share: settings, the task vocabulary, the task store, the queue,
Redis key families, webhooks and maintenance. Imports neither Flask nor torch."""
