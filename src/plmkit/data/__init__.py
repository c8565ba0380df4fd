"""Data: corpus readers (`corpus`), loaders, collators, pretraining objectives and their token caches.

The bundled datasets (`plmkit data`) are fetched by `plmkit.datasets`."""
