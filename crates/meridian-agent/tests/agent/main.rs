//! Integration tests of the agent: Kubernetes mapping over recorded API
//! responses, and the upward client against in-process fake controllers.

mod fake;
mod kubernetes;
mod upward;
