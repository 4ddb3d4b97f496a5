//! Typed errors from inside kopd mapped to Kafka error codes, at the handler edge.

use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;

use crate::meta::client_quotas::QuotaError;
use crate::meta::controller::AdminError;
use crate::meta::topic_name::TopicNameError;

/// A Kafka error code with the message clients show.
pub struct KafkaError {
    pub code: i16,
    pub message: Option<StrBytes>,
}

impl KafkaError {
    pub fn new(e: ResponseError, message: impl Into<String>) -> Self {
        Self { code: e.code(), message: Some(StrBytes::from_string(message.into())) }
    }
}

impl From<&AdminError> for KafkaError {
    fn from(e: &AdminError) -> Self {
        let code = match e {
            AdminError::TopicExists(_) => ResponseError::TopicAlreadyExists,
            AdminError::TopicCollision(..) => ResponseError::InvalidTopicException,
            AdminError::UnknownTopic => ResponseError::UnknownTopicOrPartition,
            AdminError::UnknownTopicId => ResponseError::UnknownTopicId,
            AdminError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            AdminError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            AdminError::InvalidConfig(_) => ResponseError::InvalidConfig,
            AdminError::Store(_) => ResponseError::KafkaStorageError,
            AdminError::ControllerUnavailable => ResponseError::NotController,
            AdminError::Quota(q) => {
                return match q {
                    QuotaError::InvalidRequest(m) => KafkaError::new(ResponseError::InvalidRequest, m.clone()),
                    QuotaError::UnsupportedVersion(m) => KafkaError::new(ResponseError::UnsupportedVersion, m.clone()),
                };
            }
        };
        KafkaError::new(code, e.to_string())
    }
}

impl From<&TopicNameError> for KafkaError {
    fn from(e: &TopicNameError) -> Self {
        KafkaError::new(ResponseError::InvalidTopicException, e.to_string())
    }
}
