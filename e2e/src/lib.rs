//! solgrid end-to-end tests against a real cluster (KUBECONFIG).
