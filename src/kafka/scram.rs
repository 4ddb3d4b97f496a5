//! DescribeUserScramCredentials: kopd has no SASL/SCRAM users yet (that comes with the
//! security work), so every user asked about is unknown, as on a Kafka cluster without SCRAM
//! credentials. `kafka-configs.sh --describe --entity-type users` asks alongside the quotas.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_user_scram_credentials_response::DescribeUserScramCredentialsResult;
use kafka_protocol::messages::{DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse};
use kafka_protocol::protocol::StrBytes;

pub fn describe(req: DescribeUserScramCredentialsRequest) -> DescribeUserScramCredentialsResponse {
    // A user named twice is answered once, with DUPLICATE_RESOURCE; no users: all of them (none).
    let mut named: Vec<(String, bool)> = Vec::new();
    for u in req.users.unwrap_or_default() {
        let name = u.name.to_string();
        match named.iter_mut().find(|(n, _)| *n == name) {
            Some((_, twice)) => *twice = true,
            None => named.push((name, false)),
        }
    }
    let results = named
        .into_iter()
        .map(|(user, twice)| {
            let (e, m) = if twice {
                (
                    ResponseError::DuplicateResource,
                    format!("Cannot describe SCRAM credentials for the same user twice in a single request: {user}"),
                )
            } else {
                (ResponseError::ResourceNotFound, format!("attemptToDescribeUserThatDoesNotExist: {user}"))
            };
            DescribeUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(user))
                .with_error_code(e.code())
                .with_error_message(Some(StrBytes::from_string(m)))
        })
        .collect();
    DescribeUserScramCredentialsResponse::default().with_results(results)
}
