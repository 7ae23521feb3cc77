"""The paper's mathematics: SWAG moments, the learned and isotropic priors and their files, the SG-MCMC samplers."""
