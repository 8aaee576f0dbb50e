"""Inductive-bias estimation by hypothesis sampling (Boopathy, Yue, Hwang, Iyer, Fiete; IJCAI 2024).

I(eps) = -log P_{h ~ p_h}(e(h) <= eps): sample hypotheses that fit the training data (GP posterior, trained
MLPs, random features), take their test losses, and estimate the tail -- by the paper's scaled non-central
chi-squared fit, empirically with an interval, or exactly (generalized chi-squared) for the kernel space.

    >>> from jaxfair import inductive_bias as ib
    >>> losses = ib.gp_posterior_losses(key, xtr, ytr, xte, yte, num_samples=10_000, lengthscale=4.0)
    >>> res = ib.inductive_bias(losses, target_error=0.05)          # res.nats, res.bits, res.bits_low, ...
    >>> exact = ib.exact_inductive_bias(ib.gp_loss_distribution(xtr, ytr, xte, yte, lengthscale=4.0), 0.05)
"""
from jaxfair.inductive_bias.estimator import dkw_band
from jaxfair.inductive_bias.estimator import empirical_tail
from jaxfair.inductive_bias.estimator import exact_inductive_bias
from jaxfair.inductive_bias.estimator import inductive_bias
from jaxfair.inductive_bias.estimator import InductiveBias
from jaxfair.inductive_bias.fit import fit_covariance
from jaxfair.inductive_bias.fit import fit_scaled_ncx2
from jaxfair.inductive_bias.fit import Ncx2Fit
from jaxfair.inductive_bias.gx2 import GeneralizedChiSquared
from jaxfair.inductive_bias.gx2 import imhof_cdf
from jaxfair.inductive_bias.gx2 import ncx2_logcdf
from jaxfair.inductive_bias.gx2 import scaled_ncx2
from jaxfair.inductive_bias.kernels import gp_loss_distribution
from jaxfair.inductive_bias.kernels import gp_posterior
from jaxfair.inductive_bias.kernels import gp_posterior_losses
from jaxfair.inductive_bias.kernels import gp_posterior_samples
from jaxfair.inductive_bias.kernels import median_lengthscale
from jaxfair.inductive_bias.kernels import rbf_kernel
from jaxfair.inductive_bias.networks import HypothesisLosses
from jaxfair.inductive_bias.networks import nn_hypothesis_losses
from jaxfair.inductive_bias.networks import train_mlp_hypothesis
from jaxfair.inductive_bias.random_features import random_feature_losses

LN2 = 0.6931471805599453
