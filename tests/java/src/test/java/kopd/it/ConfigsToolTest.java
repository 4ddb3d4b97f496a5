package kopd.it;

import static kopd.it.Util.get;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.AlterConfigsOptions;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.InvalidRequestException;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Topic config changes at run time: Apache Kafka 4.4.0's kafka-configs.sh --alter and the
 * AdminClient's incrementalAlterConfigs against kopd. Changes show in --describe, take effect
 * on the open partition, and survive a restart.
 */
class ConfigsToolTest {
    @TempDir
    Path dataDir;

    @TempDir
    Path scratch;

    Kopd kopd;

    @AfterEach
    void stop() {
        if (kopd != null) {
            kopd.close();
        }
    }

    List<String> configsTool(String... args) {
        Path p = Kopd.repo().resolve(".peers/bin/kafka-configs.sh");
        if (!Files.isExecutable(p)) {
            fail(p + " is missing: run scripts/install-peers.sh");
        }
        List<String> cmd = new ArrayList<>(List.of(p.toString(), "--bootstrap-server", kopd.bootstrap()));
        cmd.addAll(List.of(args));
        return cmd;
    }

    Util.ToolResult configs(String... args) throws Exception {
        return Util.runTool(scratch, 90, null, configsTool(args));
    }

    String describeTopic(String topic) throws Exception {
        Util.ToolResult r = configs("--entity-type", "topics", "--entity-name", topic, "--describe");
        assertEquals(0, r.status(), "kafka-configs --describe\n" + r.describe());
        return r.out();
    }

    /** Sends one record of `size` bytes; the exception it failed with, or null. */
    Throwable produce(String topic, int size) throws Exception {
        return produce(topic, null, size);
    }

    /** Sends one record of `size` bytes to a partition (any, for null). */
    Throwable produce(String topic, Integer partition, int size) throws Exception {
        try (KafkaProducer<byte[], byte[]> p = new KafkaProducer<>(kopd.producerProps())) {
            p.send(new ProducerRecord<>(topic, partition, null, new byte[size])).get(30, TimeUnit.SECONDS);
            return null;
        } catch (ExecutionException e) {
            return e.getCause();
        }
    }

    static Throwable failure(Admin admin, ConfigResource r, Collection<AlterConfigOp> ops) throws Exception {
        return Util.failure(admin.incrementalAlterConfigs(Map.of(r, ops)).all());
    }

    @Test
    @Timeout(value = 300, unit = TimeUnit.SECONDS)
    void alteredTopicConfigsAreDescribedTakeEffectAndSurviveARestart() throws Exception {
        kopd = Kopd.start(dataDir, 2);
        int port = kopd.port;
        try (Admin admin = kopd.admin()) {
            get(admin.createTopics(List.of(new NewTopic("cfg", 1, (short) 1))).all());
        }
        assertEquals(null, produce("cfg", 4096), "a 4 KiB record before any override");

        Util.ToolResult r = configs("--entity-type", "topics", "--entity-name", "cfg", "--alter",
                "--add-config", "retention.ms=3600000,max.message.bytes=2048");
        assertEquals(0, r.status(), "kafka-configs --alter --add-config\n" + r.describe());
        String d = describeTopic("cfg");
        assertTrue(d.contains("retention.ms=3600000"), d);
        assertTrue(d.contains("max.message.bytes=2048"), d);
        assertInstanceOf(RecordTooLargeException.class, produce("cfg", 4096),
                "the lowered max.message.bytes refuses a larger batch at once");

        r = configs("--entity-type", "topics", "--entity-name", "cfg", "--alter", "--delete-config",
                "max.message.bytes");
        assertEquals(0, r.status(), "kafka-configs --alter --delete-config\n" + r.describe());
        d = describeTopic("cfg");
        assertFalse(d.contains("max.message.bytes=2048"), d);
        assertEquals(null, produce("cfg", 4096), "the default applies again");

        // Refused as Kafka refuses them; nothing changes.
        r = configs("--entity-type", "topics", "--entity-name", "cfg", "--alter", "--add-config", "retention.ms=soon");
        assertNotEquals(0, r.status(), r.describe());
        assertTrue((r.out() + r.err()).contains("Invalid value soon for configuration retention.ms"), r.describe());
        try (Admin admin = kopd.admin()) {
            ConfigResource cfg = new ConfigResource(ConfigResource.Type.TOPIC, "cfg");
            assertInstanceOf(InvalidConfigurationException.class, failure(admin, cfg,
                    List.of(new AlterConfigOp(new ConfigEntry("retention.ms", "5"), AlterConfigOp.OpType.APPEND))),
                    "APPEND to a non-list config");
            assertInstanceOf(InvalidConfigurationException.class, failure(admin, cfg,
                    List.of(new AlterConfigOp(new ConfigEntry("no.such.config", "5"), AlterConfigOp.OpType.SET))));
            // A Kafka config kopd does not act on: listed read-only with Kafka's default, and
            // a change is refused rather than silently ignored.
            ConfigEntry unclean = get(admin.describeConfigs(List.of(cfg)).all()).get(cfg).get("unclean.leader.election.enable");
            assertEquals("false", unclean.value());
            assertTrue(unclean.isReadOnly(), unclean.toString());
            assertFalse(get(admin.describeConfigs(List.of(cfg)).all()).get(cfg).get("retention.ms").isReadOnly());
            assertInstanceOf(InvalidConfigurationException.class, failure(admin, cfg, List.of(new AlterConfigOp(
                    new ConfigEntry("unclean.leader.election.enable", "true"), AlterConfigOp.OpType.SET))));
            ConfigResource missing = new ConfigResource(ConfigResource.Type.TOPIC, "no-such-topic");
            assertInstanceOf(UnknownTopicOrPartitionException.class, failure(admin, missing,
                    List.of(new AlterConfigOp(new ConfigEntry("retention.ms", "5"), AlterConfigOp.OpType.SET))));
            // Lists: APPEND starts from the default, SUBTRACT removes.
            get(admin.incrementalAlterConfigs(Map.of(cfg, List.of(new AlterConfigOp(
                    new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.APPEND)))).all());
            assertEquals("delete,compact",
                    get(admin.describeConfigs(List.of(cfg)).all()).get(cfg).get("cleanup.policy").value());
            get(admin.incrementalAlterConfigs(Map.of(cfg, List.of(new AlterConfigOp(
                    new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.SUBTRACT)))).all());
            // validate_only checks without changing.
            get(admin.incrementalAlterConfigs(Map.of(cfg, List.of(new AlterConfigOp(
                    new ConfigEntry("segment.ms", "60000"), AlterConfigOp.OpType.SET))),
                    new AlterConfigsOptions().validateOnly(true)).all());
            assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG,
                    get(admin.describeConfigs(List.of(cfg)).all()).get(cfg).get("segment.ms").source());
            // A broker config that only a restart changes: refused, not ignored.
            ConfigResource b0 = new ConfigResource(ConfigResource.Type.BROKER, "0");
            assertInstanceOf(InvalidRequestException.class, failure(admin, b0, List.of(new AlterConfigOp(
                    new ConfigEntry("auto.create.topics.enable", "false"), AlterConfigOp.OpType.SET))));
        }

        assertEquals(0, kopd.stop(), "kopd exit status after SIGTERM\n" + kopd.logTail());
        kopd = Kopd.start(dataDir, 2, port);
        d = describeTopic("cfg");
        assertTrue(d.contains("retention.ms=3600000"), "after a restart\n" + d);
        assertTrue(d.contains("cleanup.policy=delete"), "after a restart\n" + d);
    }

    ConfigEntry topicConfig(Admin admin, String topic, String key) throws Exception {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        return get(admin.describeConfigs(List.of(r)).all()).get(r).get(key);
    }

    long earliest(Admin admin, TopicPartition tp) throws Exception {
        return get(admin.listOffsets(Map.of(tp, OffsetSpec.earliest())).all()).get(tp).offset();
    }

    /**
     * Dynamic broker configs through kafka-configs.sh: the cluster default (--entity-default)
     * and one broker's (a core's) value over it. Topics without their own value take them at
     * once (a lowered message.max.bytes refuses a larger record only on the brokers it applies
     * to; a lowered log.retention.ms deletes rolled ledgers), and they survive a restart.
     */
    @Test
    @Timeout(value = 300, unit = TimeUnit.SECONDS)
    void dynamicBrokerConfigsTakeEffectAndSurviveARestart() throws Exception {
        int port = Kopd.freePorts(2);
        List<String> fastRetention = List.of("--set", "log.retention.check.interval.ms=300");
        kopd = Kopd.start(dataDir, 2, port, fastRetention);
        int[] leader = new int[2];
        try (Admin admin = kopd.admin()) {
            get(admin.createTopics(List.of(new NewTopic("dyn", 2, (short) 1))).all());
            var parts = get(admin.describeTopics(List.of("dyn")).allTopicNames()).get("dyn").partitions();
            for (var p : parts) {
                leader[p.partition()] = p.leader().id();
            }
        }
        assertNotEquals(leader[0], leader[1], "two partitions go to two cores");

        Util.ToolResult r = configs("--entity-type", "brokers", "--entity-default", "--alter",
                "--add-config", "message.max.bytes=2048");
        assertEquals(0, r.status(), "kafka-configs --entity-default --alter\n" + r.describe());
        r = configs("--entity-type", "brokers", "--entity-default", "--describe");
        assertEquals(0, r.status(), r.describe());
        assertTrue(r.out().contains("message.max.bytes=2048"), r.out());
        assertInstanceOf(RecordTooLargeException.class, produce("dyn", 0, 4096), "the cluster default applies");
        assertInstanceOf(RecordTooLargeException.class, produce("dyn", 1, 4096), "on every broker");

        // One broker's own value beats the cluster default, on that broker only.
        String b0 = Integer.toString(leader[0]);
        r = configs("--entity-type", "brokers", "--entity-name", b0, "--alter", "--add-config", "message.max.bytes=8192");
        assertEquals(0, r.status(), "kafka-configs --entity-name --alter\n" + r.describe());
        r = configs("--entity-type", "brokers", "--entity-name", b0, "--describe");
        assertTrue(r.out().contains("message.max.bytes=8192"), r.out());
        assertEquals(null, produce("dyn", 0, 4096), "broker " + b0 + "'s own value");
        assertInstanceOf(RecordTooLargeException.class, produce("dyn", 1, 4096), "the other broker keeps the default");
        try (Admin admin = kopd.admin()) {
            // A topic is described as the broker answering sees it (either core here).
            ConfigEntry e = topicConfig(admin, "dyn", "max.message.bytes");
            assertTrue(e.source() == ConfigEntry.ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG && e.value().equals("2048")
                    || e.source() == ConfigEntry.ConfigSource.DYNAMIC_BROKER_CONFIG && e.value().equals("8192"),
                    e.toString());
            ConfigResource broker = new ConfigResource(ConfigResource.Type.BROKER, b0);
            ConfigEntry mine = get(admin.describeConfigs(List.of(broker)).all()).get(broker).get("message.max.bytes");
            assertEquals("8192", mine.value());
            assertEquals(ConfigEntry.ConfigSource.DYNAMIC_BROKER_CONFIG, mine.source());
            assertFalse(mine.isReadOnly());
            assertInstanceOf(InvalidRequestException.class, failure(admin, broker, List.of(new AlterConfigOp(
                    new ConfigEntry("log.retention.ms", "soon"), AlterConfigOp.OpType.SET))));
        }

        // Small ledgers, then a short retention: the rolled ones are deleted.
        r = configs("--entity-type", "brokers", "--entity-default", "--alter", "--add-config", "log.segment.bytes=100");
        assertEquals(0, r.status(), r.describe());
        for (int i = 0; i < 5; i++) {
            assertEquals(null, produce("dyn", 1, 200));
        }
        TopicPartition tp1 = new TopicPartition("dyn", 1);
        try (Admin admin = kopd.admin()) {
            assertEquals(0L, earliest(admin, tp1), "nothing deleted yet (retention is a week)");
            r = configs("--entity-type", "brokers", "--entity-default", "--alter", "--add-config", "log.retention.ms=1");
            assertEquals(0, r.status(), r.describe());
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (earliest(admin, tp1) == 0 && System.nanoTime() < deadline) {
                Thread.sleep(100);
            }
            assertTrue(earliest(admin, tp1) > 0, "the lowered log.retention.ms deleted rolled ledgers");
        }
        r = configs("--entity-type", "brokers", "--entity-default", "--alter", "--delete-config",
                "log.retention.ms,log.segment.bytes");
        assertEquals(0, r.status(), r.describe());

        assertEquals(0, kopd.stop(), "kopd exit status after SIGTERM\n" + kopd.logTail());
        kopd = Kopd.start(dataDir, 2, port, fastRetention);
        r = configs("--entity-type", "brokers", "--entity-default", "--describe");
        assertTrue(r.out().contains("message.max.bytes=2048"), "after a restart\n" + r.out());
        assertFalse(r.out().contains("log.retention.ms"), "deleted before the restart\n" + r.out());
        assertEquals(null, produce("dyn", 0, 4096), "broker " + b0 + "'s value after a restart");
        assertInstanceOf(RecordTooLargeException.class, produce("dyn", 1, 4096), "the default after a restart");
    }

    /**
     * Client quotas through kafka-configs.sh (users, clients, a user's client, --entity-default,
     * IPs) and the AdminClient: stored, described with Kafka's filters, removed, refused as Kafka
     * refuses them, and kept across a restart. (kopd does not enforce them yet.)
     */
    @Test
    @Timeout(value = 300, unit = TimeUnit.SECONDS)
    void clientQuotasAreStoredDescribedAndSurviveARestart() throws Exception {
        kopd = Kopd.start(dataDir, 2);
        int port = kopd.port;
        String[][] alters = {
            {"--entity-type", "users", "--entity-name", "alice", "--add-config", "producer_byte_rate=1024,consumer_byte_rate=2048"},
            {"--entity-type", "users", "--entity-default", "--add-config", "request_percentage=50"},
            {"--entity-type", "users", "--entity-name", "alice", "--entity-type", "clients", "--entity-name", "app",
                "--add-config", "producer_byte_rate=100"},
            {"--entity-type", "ips", "--entity-name", "127.0.0.1", "--add-config", "connection_creation_rate=10"},
        };
        for (String[] a : alters) {
            List<String> args = new ArrayList<>(List.of(a));
            args.add("--alter");
            Util.ToolResult r = configs(args.toArray(new String[0]));
            assertEquals(0, r.status(), String.join(" ", a) + "\n" + r.describe());
        }
        Util.ToolResult r = configs("--entity-type", "users", "--entity-name", "alice", "--describe");
        assertEquals(0, r.status(), r.describe());
        assertTrue(r.out().contains("Quota configs for user-principal 'alice' are consumer_byte_rate=2048.0, producer_byte_rate=1024.0"),
                r.out());
        r = configs("--entity-type", "users", "--entity-default", "--describe");
        assertTrue(r.out().contains("Quota configs for the default user-principal are request_percentage=50.0"), r.out());
        r = configs("--entity-type", "users", "--entity-name", "alice", "--entity-type", "clients", "--entity-name", "app", "--describe");
        assertTrue(r.out().contains("producer_byte_rate=100.0"), r.out());
        r = configs("--entity-type", "users", "--entity-name", "alice", "--alter", "--add-config", "producer_byte_rate=1.5");
        assertNotEquals(0, r.status(), "a fractional byte rate is refused\n" + r.describe());
        r = configs("--entity-type", "users", "--entity-name", "alice", "--alter", "--delete-config", "consumer_byte_rate");
        assertEquals(0, r.status(), r.describe());

        java.util.function.Supplier<Map<org.apache.kafka.common.quota.ClientQuotaEntity, Map<String, Double>>> all = () -> {
            try (Admin admin = kopd.admin()) {
                return get(admin.describeClientQuotas(org.apache.kafka.common.quota.ClientQuotaFilter.all()).entities());
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        };
        Map<org.apache.kafka.common.quota.ClientQuotaEntity, Map<String, Double>> before = all.get();
        assertEquals(Map.of("producer_byte_rate", 1024.0),
                before.get(new org.apache.kafka.common.quota.ClientQuotaEntity(Map.of("user", "alice"))), before.toString());
        assertEquals(4, before.size(), before.toString());

        assertEquals(0, kopd.stop(), "kopd exit status after SIGTERM\n" + kopd.logTail());
        kopd = Kopd.start(dataDir, 2, port);
        assertEquals(before, all.get(), "the same quotas after a restart");
    }
}
