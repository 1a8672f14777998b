//! Process lifecycle and cluster identity: health endpoints, metadata, SIGTERM.

use anyhow::bail;
use causeway_integration_tests::{
    ensure_eq, http_get, produce_values, topic_name, with_broker, BrokerOptions, CLIENT_TIMEOUT,
};
use rdkafka::consumer::{BaseConsumer, Consumer};

#[test]
fn health_and_readiness_endpoints_answer_200_and_metrics_are_served() {
    with_broker(BrokerOptions::new(), |broker| {
        let (code, _) = http_get(broker.http_addr(), "/healthz")?;
        ensure_eq!(code, 200, "/healthz");
        let (code, _) = http_get(broker.http_addr(), "/readyz")?;
        ensure_eq!(code, 200, "/readyz");
        let topic = topic_name("metrics");
        produce_values(&broker.producer(), &topic, 0, &["a", "b"])?;
        let (code, body) = http_get(broker.http_addr(), "/metrics")?;
        ensure_eq!(code, 200, "/metrics");
        if body.trim().is_empty() {
            bail!("/metrics is empty after a produce");
        }
        Ok(())
    });
}

#[test]
fn metadata_lists_broker_0_at_the_advertised_address() {
    with_broker(BrokerOptions::new(), |broker| {
        let consumer: BaseConsumer = broker.consumer_config().create()?;
        let md = consumer.fetch_metadata(None, CLIENT_TIMEOUT)?;
        let brokers: Vec<(i32, String, i32)> = md
            .brokers()
            .iter()
            .map(|b| (b.id(), b.host().to_string(), b.port()))
            .collect();
        ensure_eq!(
            brokers,
            vec![(
                0,
                "127.0.0.1".to_string(),
                i32::from(broker.kafka_addr().port())
            )]
        );
        Ok(())
    });
}

#[test]
fn sigterm_shuts_down_gracefully_with_exit_code_0() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("term");
        produce_values(&broker.producer(), &topic, 0, &["x"])?;
        let status = broker.terminate()?;
        if !status.success() {
            bail!("exit status after SIGTERM: {status}");
        }
        if std::net::TcpStream::connect(broker.kafka_addr()).is_ok() {
            bail!("the Kafka port still accepts connections after exit");
        }
        broker.restart()?;
        let (code, _) = http_get(broker.http_addr(), "/readyz")?;
        ensure_eq!(code, 200, "/readyz after restart");
        Ok(())
    });
}
