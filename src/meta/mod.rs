//! Cluster metadata: the topic catalog, partition -> core assignment, the controller that
//! writes them, and the metadata stores that keep them.

pub mod assignment;
pub mod broker_config;
pub mod catalog;
pub mod client_quotas;
pub mod controller;
pub mod store;
pub mod topic_config;
pub mod topic_name;
