"""The application file spark-submit runs for every stage (:mod:`pipeline.app.main`), alone in its folder."""
