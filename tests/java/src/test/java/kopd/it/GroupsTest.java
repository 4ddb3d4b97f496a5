package kopd.it;

import static kopd.it.Util.get;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.RebalanceInProgressException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Kafka's own consumer in groups against kopd's group coordinator: eager (range) and
 * incremental (cooperative-sticky) rebalances, static membership, committed offsets across a
 * restart, and kafka-consumer-groups.sh.
 */
class GroupsTest {
    static final Map<String, String> FAST_GROUPS = Map.of("group.initial.rebalance.delay.ms", "0");
    static final Duration WITHIN = Duration.ofSeconds(60);

    @TempDir
    Path dataDir;

    @TempDir
    Path scratch;

    static Properties groupProps(Kopd kopd, String group, String assignor, String instance) {
        Properties p = kopd.consumerProps();
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor);
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
        p.put(ConsumerConfig.MAX_POLL_INTERVAL_MS_CONFIG, "30000");
        if (instance != null) {
            p.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, instance);
            p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "30000");
        }
        return p;
    }

    static void createAndFill(Kopd kopd, String topic, int partitions, int records) throws Exception {
        try (Admin admin = kopd.admin()) {
            get(admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all());
        }
        try (KafkaProducer<byte[], byte[]> p = new KafkaProducer<>(kopd.producerProps())) {
            for (int i = 0; i < records; i++) {
                byte[] v = Integer.toString(i).getBytes(StandardCharsets.UTF_8);
                p.send(new ProducerRecord<>(topic, i % partitions, v, v));
            }
            p.flush();
        }
    }

    /** Polls every consumer in turn (one thread: consumers are not thread-safe). */
    static void pollAll(List<KafkaConsumer<byte[], byte[]>> consumers, Set<String> seen) {
        for (KafkaConsumer<byte[], byte[]> c : consumers) {
            for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(100))) {
                seen.add(new String(r.value(), StandardCharsets.UTF_8));
            }
            if (!c.assignment().isEmpty()) {
                try {
                    c.commitSync();
                } catch (RebalanceInProgressException e) {
                    // The client refuses commits mid-rebalance (cooperative); the next poll
                    // finishes the rebalance and a later commit covers these records.
                }
            }
        }
    }

    static long committedTotal(Kopd kopd, String group) throws Exception {
        try (Admin admin = kopd.admin()) {
            Map<TopicPartition, OffsetAndMetadata> offsets =
                    get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
            return offsets.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
        }
    }

    @ParameterizedTest
    @ValueSource(classes = {RangeAssignor.class, CooperativeStickyAssignor.class})
    void twoConsumersSplitATopicAndCommit(Class<?> assignor) throws Exception {
        try (Kopd kopd = Kopd.start(dataDir, 2, FAST_GROUPS)) {
            String topic = "split-" + assignor.getSimpleName();
            String group = "g-" + assignor.getSimpleName();
            createAndFill(kopd, topic, 6, 600);
            List<KafkaConsumer<byte[], byte[]>> consumers = new ArrayList<>();
            Set<String> seen = new HashSet<>();
            try {
                for (int i = 0; i < 2; i++) {
                    KafkaConsumer<byte[], byte[]> c =
                            new KafkaConsumer<>(groupProps(kopd, group, assignor.getName(), null));
                    c.subscribe(List.of(topic));
                    consumers.add(c);
                }
                long deadline = System.nanoTime() + WITHIN.toNanos();
                while (seen.size() < 600 || consumers.stream().anyMatch(c -> c.assignment().isEmpty())) {
                    if (System.nanoTime() > deadline) {
                        fail("seen " + seen.size() + " records; assignments "
                                + consumers.stream().map(KafkaConsumer::assignment).toList());
                    }
                    pollAll(consumers, seen);
                }
                Set<TopicPartition> a = consumers.get(0).assignment();
                Set<TopicPartition> b = consumers.get(1).assignment();
                Set<TopicPartition> both = new HashSet<>(a);
                both.retainAll(b);
                assertTrue(both.isEmpty(), "each partition has one owner: " + a + " / " + b);
                assertEquals(6, a.size() + b.size());
                // Commits skipped mid-rebalance are caught up by later ones.
                while (committedTotal(kopd, group) != 600) {
                    assertTrue(System.nanoTime() < deadline, "committed " + committedTotal(kopd, group));
                    pollAll(consumers, seen);
                }
            } finally {
                consumers.forEach(KafkaConsumer::close);
            }
            assertEquals(600, seen.size());
        }
    }

    @Test
    void restartedStaticMemberRejoinsWithoutRebalance() throws Exception {
        try (Kopd kopd = Kopd.start(dataDir, 2, FAST_GROUPS)) {
            String topic = "static-t";
            createAndFill(kopd, topic, 4, 40);
            AtomicInteger assignedCalls = new AtomicInteger();
            ConsumerRebalanceListener counting = new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> partitions) {}

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                    assignedCalls.incrementAndGet();
                }
            };
            String range = RangeAssignor.class.getName();
            KafkaConsumer<byte[], byte[]> a = new KafkaConsumer<>(groupProps(kopd, "static", range, "a"));
            KafkaConsumer<byte[], byte[]> b = new KafkaConsumer<>(groupProps(kopd, "static", range, "b"));
            KafkaConsumer<byte[], byte[]> b2 = null;
            try {
                // b first, alone: its next subscription then carries generation 1 and a restarted
                // b's does not, which must not make the rejoin a rebalance (only a change of the
                // group's protocol does).
                b.subscribe(List.of(topic));
                Set<String> seen = new HashSet<>();
                long deadline = System.nanoTime() + WITHIN.toNanos();
                while (b.assignment().size() != 4) {
                    assertTrue(System.nanoTime() < deadline, "b alone never got the partitions");
                    pollAll(List.of(b), seen);
                }
                a.subscribe(List.of(topic), counting);
                while (a.assignment().size() != 2 || b.assignment().size() != 2) {
                    assertTrue(System.nanoTime() < deadline, "group never settled");
                    pollAll(List.of(a, b), seen);
                }
                // Let any rebalance in flight finish, then count from here.
                for (int i = 0; i < 10; i++) {
                    pollAll(List.of(a, b), seen);
                }
                Set<TopicPartition> bAssignment = Set.copyOf(b.assignment());
                int before = assignedCalls.get();
                b.close(); // a static member sends no LeaveGroup
                b = null;
                b2 = new KafkaConsumer<>(groupProps(kopd, "static", range, "b"));
                b2.subscribe(List.of(topic));
                deadline = System.nanoTime() + WITHIN.toNanos();
                while (b2.assignment().isEmpty()) {
                    assertTrue(System.nanoTime() < deadline, "restarted static member got no assignment");
                    pollAll(List.of(a, b2), seen);
                }
                for (int i = 0; i < 10; i++) {
                    pollAll(List.of(a, b2), seen);
                }
                assertEquals(bAssignment, b2.assignment(), "the restarted member keeps its partitions");
                assertEquals(before, assignedCalls.get(), "the other member saw no rebalance");
            } finally {
                a.close();
                if (b != null) {
                    b.close();
                }
                if (b2 != null) {
                    b2.close();
                }
            }
        }
    }

    Util.ToolResult consumerGroups(Kopd kopd, String... args) throws Exception {
        List<String> cmd = new ArrayList<>(
                List.of(Util.peerTool("kafka-consumer-groups.sh").toString(), "--bootstrap-server", kopd.bootstrap()));
        cmd.addAll(List.of(args));
        return Util.runTool(scratch, 120, null, cmd);
    }

    /** partition -> (current offset, log end offset) from `--describe` output. */
    static Map<Integer, long[]> describedOffsets(String out, String group, String topic) {
        Map<Integer, long[]> m = new HashMap<>();
        for (String line : out.split("\n")) {
            String[] f = line.trim().split("\\s+");
            if (f.length >= 5 && f[0].equals(group) && f[1].equals(topic)) {
                m.put(Integer.parseInt(f[2]), new long[] {Long.parseLong(f[3]), Long.parseLong(f[4])});
            }
        }
        return m;
    }

    @Test
    void committedOffsetsSurviveRestartAndShowInTheCli() throws Exception {
        String topic = "durable-t";
        String group = "durable";
        int port;
        try (Kopd kopd = Kopd.start(dataDir, 2, FAST_GROUPS)) {
            port = kopd.port;
            createAndFill(kopd, topic, 3, 90);
            Set<String> seen = new HashSet<>();
            try (KafkaConsumer<byte[], byte[]> c =
                    new KafkaConsumer<>(groupProps(kopd, group, RangeAssignor.class.getName(), null))) {
                c.subscribe(List.of(topic));
                long deadline = System.nanoTime() + WITHIN.toNanos();
                while (seen.size() < 90) {
                    assertTrue(System.nanoTime() < deadline, "consumed " + seen.size());
                    pollAll(List.of(c), seen);
                }
            }
            assertEquals(0, kopd.stop());
        }
        try (Kopd kopd = Kopd.start(dataDir, 2, port, List.of("--set", "group.initial.rebalance.delay.ms=0"))) {
            assertEquals(90, committedTotal(kopd, group));
            try (Admin admin = kopd.admin()) {
                Collection<ConsumerGroupListing> groups = get(admin.listConsumerGroups().all());
                assertTrue(groups.stream().anyMatch(g -> g.groupId().equals(group)), groups.toString());
            }
            Util.ToolResult list = consumerGroups(kopd, "--list");
            assertEquals(0, list.status(), list.err());
            assertTrue(list.out().lines().anyMatch(group::equals), list.out());
            Util.ToolResult described = consumerGroups(kopd, "--describe", "--group", group);
            assertEquals(0, described.status(), described.err());
            Map<Integer, long[]> offsets = describedOffsets(described.out(), group, topic);
            assertEquals(Set.of(0, 1, 2), offsets.keySet(), described.out());
            for (long[] o : offsets.values()) {
                assertEquals(30, o[0], described.out());
                assertEquals(o[1], o[0], "lag 0\n" + described.out());
            }
            Util.ToolResult reset = consumerGroups(kopd, "--reset-offsets", "--group", group, "--topic", topic,
                    "--to-earliest", "--execute");
            assertEquals(0, reset.status(), reset.err());
            assertEquals(0, committedTotal(kopd, group));
            Util.ToolResult reset2 = consumerGroups(kopd, "--reset-offsets", "--group", group, "--topic", topic + ":1",
                    "--to-offset", "7", "--execute");
            assertEquals(0, reset2.status(), reset2.err());
            assertEquals(7, committedTotal(kopd, group));
            Util.ToolResult deletedOffsets = consumerGroups(kopd, "--delete-offsets", "--group", group, "--topic", topic);
            assertEquals(0, deletedOffsets.status(), deletedOffsets.err());
            try (Admin admin = kopd.admin()) {
                assertTrue(get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata()).isEmpty());
            }
            Util.ToolResult deleted = consumerGroups(kopd, "--delete", "--group", group);
            assertEquals(0, deleted.status(), deleted.err());
            try (Admin admin = kopd.admin()) {
                Collection<ConsumerGroupListing> groups = get(admin.listConsumerGroups().all());
                assertFalse(groups.stream().anyMatch(g -> g.groupId().equals(group)), groups.toString());
            }
        }
    }
}
