"""CT ingestion, preprocessing, chest phantoms and the (views, CT) dataset."""
