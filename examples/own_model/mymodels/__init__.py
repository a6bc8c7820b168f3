"""A small LightningModule and DataModule of one's own, as a user would write them."""
