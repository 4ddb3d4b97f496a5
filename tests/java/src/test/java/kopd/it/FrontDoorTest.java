package kopd.it;

import static kopd.it.Util.get;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.DescribeConsumerGroupsOptions;
import org.apache.kafka.clients.admin.DescribeTopicsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.errors.TransactionalIdAuthorizationException;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What the Java client sees at the front door: authorized operations when it asks for them
 * (the bit sets Kafka grants without an authorizer), and a transactional producer that fails at
 * once with the reason instead of retrying for minutes (kopd has no transactions yet).
 */
class FrontDoorTest {
    @TempDir
    static Path dataDir;

    static Kopd kopd;
    static Admin admin;

    @BeforeAll
    static void startKopd() throws Exception {
        kopd = Kopd.start(dataDir, 2);
        admin = kopd.admin();
    }

    @AfterAll
    static void stopKopd() {
        if (admin != null) {
            admin.close(Duration.ofSeconds(5));
        }
        if (kopd != null) {
            kopd.close();
        }
    }

    static final Set<AclOperation> TOPIC_OPS = Set.of(AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE,
            AclOperation.DELETE, AclOperation.ALTER, AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS,
            AclOperation.ALTER_CONFIGS);
    static final Set<AclOperation> CLUSTER_OPS = Set.of(AclOperation.CREATE, AclOperation.ALTER, AclOperation.DESCRIBE,
            AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS,
            AclOperation.IDEMPOTENT_WRITE);
    static final Set<AclOperation> GROUP_OPS = Set.of(AclOperation.READ, AclOperation.DELETE, AclOperation.DESCRIBE,
            AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS);

    @Test
    void authorizedOperationsAreKafkasWithoutAnAuthorizer() throws Exception {
        get(admin.createTopics(List.of(new NewTopic("ops", 2, (short) 1))).all());
        TopicDescription d = get(admin.describeTopics(List.of("ops"),
                new DescribeTopicsOptions().includeAuthorizedOperations(true)).allTopicNames()).get("ops");
        assertEquals(TOPIC_OPS, d.authorizedOperations());

        Set<AclOperation> cluster = get(admin.describeCluster(
                new DescribeClusterOptions().includeAuthorizedOperations(true)).authorizedOperations());
        assertEquals(CLUSTER_OPS, cluster);

        // A group that exists: one consumer commits an offset.
        Properties p = kopd.consumerProps();
        p.put(ConsumerConfig.GROUP_ID_CONFIG, "ops-group");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            c.subscribe(List.of("ops"));
            Util.eventually(Duration.ofSeconds(30), () -> {
                c.poll(Duration.ofMillis(200));
                assertTrue(!c.assignment().isEmpty(), "assigned");
            });
            c.commitSync();
        }
        ConsumerGroupDescription g = get(admin.describeConsumerGroups(List.of("ops-group"),
                new DescribeConsumerGroupsOptions().includeAuthorizedOperations(true)).all()).get("ops-group");
        assertEquals(GROUP_OPS, g.authorizedOperations());
    }

    @Test
    void transactionalProducerFailsAtOnceWithTheReason() {
        Properties p = kopd.producerProps();
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, "tx-1");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "120000");
        long started = System.nanoTime();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            KafkaException e = assertThrows(KafkaException.class, producer::initTransactions);
            long tookMs = (System.nanoTime() - started) / 1_000_000;
            // A retriable answer would keep it waiting up to max.block.ms (2 minutes here).
            assertTrue(tookMs < 30_000, "initTransactions failed after " + tookMs + " ms");
            assertInstanceOf(TransactionalIdAuthorizationException.class, e, String.valueOf(e));
        }
    }

    @Test
    void idempotentProducerStillWorks() throws Exception {
        get(admin.createTopics(List.of(new NewTopic("plain", 1, (short) 1))).all());
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(kopd.producerProps())) {
            var md = producer.send(new org.apache.kafka.clients.producer.ProducerRecord<>("plain", "v".getBytes()))
                    .get();
            assertEquals(0, md.offset());
        }
    }
}
