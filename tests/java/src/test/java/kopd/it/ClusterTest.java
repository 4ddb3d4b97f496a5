package kopd.it;

import static kopd.it.Util.describe;
import static kopd.it.Util.eventually;
import static kopd.it.Util.get;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
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
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Kafka's Java clients and CLI against a kopd cluster: 3 nodes x 2 cores over one ZooKeeper and
 * three bookies. Lookup, produce and group consumption through any node; kill -9 of the group
 * coordinator's node during idempotent production and group consumption; a rolling restart of
 * every node under continuous production. Failover and unavailability figures are printed
 * (bench/cluster.py measures them over many runs); nothing here asserts a duration.
 */
class ClusterTest {
    static final Duration WITHIN = Duration.ofSeconds(60);

    @TempDir
    Path root;

    static int nodeIndexOfLeader(KopdCluster c, TopicPartitionInfo p) {
        return p.leader() == null ? -1 : c.nodeOf(p.leader());
    }

    /** Waits until every partition of {@code topic} has a leader on a live node; returns them. */
    static TopicDescription served(KopdCluster c, Admin admin, String topic) throws Exception {
        TopicDescription[] d = new TopicDescription[1];
        eventually(WITHIN, () -> {
            d[0] = describe(admin, topic);
            for (TopicPartitionInfo p : d[0].partitions()) {
                assertTrue(nodeIndexOfLeader(c, p) >= 0, "partition " + p.partition() + " has no live leader: " + p);
            }
        });
        return d[0];
    }

    static Set<Integer> leaderNodes(KopdCluster c, TopicDescription d) {
        return d.partitions().stream().map(p -> nodeIndexOfLeader(c, p)).collect(Collectors.toCollection(TreeSet::new));
    }

    static Properties groupProps(KopdCluster c, int via, String group) {
        Properties p = c.consumerProps(via);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
        return p;
    }

    static long seqOf(ConsumerRecord<byte[], byte[]> r) {
        return Long.parseLong(new String(r.value(), StandardCharsets.UTF_8).substring(2));
    }

    /**
     * AdminClient and kafka-topics.sh see every node's brokers and leaders spread over the
     * nodes, from any node; a producer bootstrapped from one node and a group consumer from
     * another move the records; the group's offsets are visible from the third.
     */
    @Test
    void javaClientsAndToolsThroughAnyNode() throws Exception {
        KopdCluster c = KopdCluster.start(root, "java-any", 3);
        try (c) {
            String topic = "spread";
            int partitions = 12;
            try (Admin a0 = c.admin(0); Admin a2 = c.admin(2)) {
                get(a0.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all());
                TopicDescription d = served(c, a2, topic);
                assertEquals(Set.of(0, 1, 2), leaderNodes(c, d), "leaders of " + d);
                eventually(WITHIN, () -> {
                    Collection<Node> brokers = get(a2.describeCluster().nodes());
                    assertEquals(3 * KopdCluster.CORES, brokers.size(), "brokers " + brokers);
                    assertEquals(Set.of(0, 1, 2), brokers.stream().map(c::nodeOf).collect(Collectors.toSet()));
                });
                Node controller = get(a0.describeCluster().controller());
                assertTrue(c.nodeOf(controller) >= 0, "controller " + controller + " is not a live broker");
            }

            // kafka-topics.sh --describe through node 1 shows a leader on every node.
            Util.ToolResult r = Util.runTool(root, 60, null, List.of(Util.peerTool("kafka-topics.sh").toString(),
                    "--bootstrap-server", c.nodes.get(1).bootstrap(), "--describe", "--topic", topic));
            assertEquals(0, r.status(), r.describe());
            Matcher m = Pattern.compile("Partition: (\\d+)\\s+Leader: (-?\\d+)").matcher(r.out());
            Map<Integer, Integer> cliLeaders = new TreeMap<>();
            while (m.find()) {
                cliLeaders.put(Integer.parseInt(m.group(1)), Integer.parseInt(m.group(2)));
            }
            assertEquals(partitions, cliLeaders.size(), r.describe());
            Set<Integer> cliNodes = new TreeSet<>();
            try (Admin a1 = c.admin(1)) {
                Map<Integer, Node> byId = get(a1.describeCluster().nodes()).stream()
                        .collect(Collectors.toMap(Node::id, n -> n));
                for (int leader : cliLeaders.values()) {
                    assertTrue(byId.containsKey(leader), "kafka-topics.sh leader " + leader + " is not a broker");
                    cliNodes.add(c.nodeOf(byId.get(leader)));
                }
            }
            assertEquals(Set.of(0, 1, 2), cliNodes, r.out());

            // Produce bootstrapped from node 1 only, consume in a group bootstrapped from node 2.
            int n = 3000;
            Properties pp = c.nodes.get(1).producerProps();
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
                for (int i = 0; i < n; i++) {
                    producer.send(new ProducerRecord<>(topic, ("k" + i).getBytes(StandardCharsets.UTF_8),
                            ("v-" + i).getBytes(StandardCharsets.UTF_8)));
                }
                producer.flush();
            }
            Set<Long> got = new HashSet<>();
            try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(groupProps(c, 2, "any-node"))) {
                consumer.subscribe(List.of(topic));
                long deadline = System.nanoTime() + WITHIN.toNanos();
                while (got.size() < n && System.nanoTime() < deadline) {
                    for (ConsumerRecord<byte[], byte[]> rec : consumer.poll(Duration.ofMillis(200))) {
                        got.add(seqOf(rec));
                    }
                }
                consumer.commitSync(Duration.ofSeconds(30));
            }
            assertEquals(n, got.size(), "records consumed by the group");

            // The committed offsets, read through node 0, add up to everything produced.
            try (Admin a0 = c.admin(0)) {
                Map<TopicPartition, OffsetAndMetadata> committed =
                        get(a0.listConsumerGroupOffsets("any-node").partitionsToOffsetAndMetadata());
                assertEquals(partitions, committed.size(), "committed " + committed);
                assertEquals(n, committed.values().stream().mapToLong(OffsetAndMetadata::offset).sum());
            }
        } catch (Throwable t) {
            System.err.println("cluster test failed; the nodes' logs:\n" + c.logs());
            throw t;
        }
    }

    /**
     * Kill -9 of the node coordinating a consumer group, during idempotent acks=all production
     * and the group's consumption: production and the group resume on the survivors; every
     * acknowledged record is in the log once at its offset; the group reads everything and its
     * committed offsets never go back.
     */
    @Test
    void killNineDuringProductionAndGroupConsumption() throws Exception {
        KopdCluster c = KopdCluster.start(root, "java-kill", 3);
        try (c) {
            String topic = "failover";
            String group = "survivors";
            int partitions = 6;
            try (Admin admin = c.admin(0)) {
                get(admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all());
                served(c, admin, topic);
            }
            Map<Long, Boolean> consumed = new ConcurrentHashMap<>();
            Map<TopicPartition, Long> lastCommitted = new ConcurrentHashMap<>();
            List<Exception> consumerErrors = new ArrayList<>();
            boolean[] stop = {false};
            Thread consumerThread = new Thread(() -> {
                try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(groupProps(c, 0, group))) {
                    consumer.subscribe(List.of(topic));
                    while (!stop[0]) {
                        var records = consumer.poll(Duration.ofMillis(200));
                        for (ConsumerRecord<byte[], byte[]> rec : records) {
                            consumed.put(seqOf(rec), true);
                        }
                        if (records.isEmpty()) {
                            continue;
                        }
                        Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                        for (TopicPartition tp : records.partitions()) {
                            var list = records.records(tp);
                            offsets.put(tp, new OffsetAndMetadata(list.get(list.size() - 1).offset() + 1));
                        }
                        try {
                            consumer.commitSync(offsets, Duration.ofSeconds(10));
                            offsets.forEach((tp, o) -> lastCommitted.merge(tp, o.offset(), Math::max));
                        } catch (Exception retriable) {
                            // Coordinator moving or a rebalance: the next poll's commit covers it.
                        }
                    }
                } catch (Exception e) {
                    consumerErrors.add(e);
                }
            }, "cluster-group");
            consumerThread.setDaemon(true);

            try (ClusterLoad load = new ClusterLoad(c.producerProps(), topic, partitions, 5)) {
                consumerThread.start();
                load.awaitMore(3000, WITHIN);
                eventually(WITHIN, () -> assertFalse(lastCommitted.isEmpty(), "the group has not committed yet"));

                int victim;
                TopicDescription before;
                try (Admin admin = c.admin(0)) {
                    Node coordinator = get(admin.describeConsumerGroups(List.of(group)).all()).get(group).coordinator();
                    victim = c.nodeOf(coordinator);
                    assertTrue(victim >= 0, "coordinator " + coordinator);
                    before = describe(admin, topic);
                }
                Set<Integer> moved = before.partitions().stream().filter(p -> nodeIndexOfLeader(c, p) == victim)
                        .map(TopicPartitionInfo::partition).collect(Collectors.toCollection(TreeSet::new));
                Map<TopicPartition, Long> committedBeforeKill = new HashMap<>(lastCommitted);
                long killed = System.nanoTime();
                long seqAtKill = load.nextSeq();
                c.kill9(victim);
                eventually(WITHIN, () -> assertEquals(moved, load.firstAckAfter(killed, seqAtKill, moved).keySet(),
                        "moved partitions acknowledged again"));
                load.awaitMore(3000, WITHIN);
                Map<Integer, Long> first = load.firstAckAfter(killed, seqAtKill, moved);
                long firstMs = TimeUnit.NANOSECONDS.toMillis(
                        first.values().stream().mapToLong(x -> x).min().orElseThrow() - killed);
                long lastMs = TimeUnit.NANOSECONDS.toMillis(
                        first.values().stream().mapToLong(x -> x).max().orElseThrow() - killed);
                System.out.printf("kill -9 of node %d (group coordinator, leader of partitions %s): first ack on a"
                        + " moved partition after %d ms, every moved partition within %d ms (session %d ms)%n",
                        victim, moved, firstMs, lastMs, KopdCluster.SESSION_MS);
                load.finish();
                assertEquals(List.of(), load.failures, "failed sends");

                int other = victim == 0 ? 1 : 0;
                long records = load.verifyLog(c.consumerProps(other));
                assertEquals(load.acked(), records, "records in the log vs acknowledged");

                // The group (its consumer bootstrapped from the killed node's survivors' metadata)
                // reads every acknowledged record and commits up to the end.
                eventually(WITHIN, () -> {
                    long missing = load.acks.stream().filter(a -> !consumed.containsKey(a.seq())).count();
                    assertEquals(0, missing, "acknowledged records the group has not read");
                });
                eventually(WITHIN, () -> {
                    try (Admin admin = c.admin(other)) {
                        Map<TopicPartition, OffsetAndMetadata> now =
                                get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
                        committedBeforeKill.forEach((tp, o) -> assertTrue(now.get(tp) != null && now.get(tp).offset() >= o,
                                tp + " committed " + o + " before the kill, now " + now.get(tp)));
                        long total = now.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
                        assertEquals(records, total, "committed offsets at the end");
                    }
                });
            } finally {
                stop[0] = true;
                consumerThread.join(30_000);
            }
            assertEquals(List.of(), consumerErrors, "group consumer errors");
        } catch (Throwable t) {
            System.err.println("cluster test failed; the nodes' logs:\n" + c.logs());
            throw t;
        }
    }

    /**
     * Every node in turn stopped (SIGTERM: it hands its partitions over) and started again while
     * a producer keeps writing: nothing acknowledged is lost or duplicated. Prints, per node,
     * how long its hand-over took and the longest time any partition went without an ack.
     */
    @Test
    void rollingRestartUnderLoad() throws Exception {
        KopdCluster c = KopdCluster.start(root, "java-rolling", 3);
        try (c) {
            String topic = "rolling";
            int partitions = 6;
            try (Admin admin = c.admin(0)) {
                get(admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all());
                served(c, admin, topic);
            }
            List<String> figures = new ArrayList<>();
            try (ClusterLoad load = new ClusterLoad(c.producerProps(), topic, partitions, 5)) {
                load.awaitMore(2000, WITHIN);
                for (int i = 0; i < 3; i++) {
                    int via = (i + 1) % 3;
                    Set<Integer> owned;
                    try (Admin admin = c.admin(via)) {
                        TopicDescription d = served(c, admin, topic);
                        final int node = i;
                        owned = d.partitions().stream().filter(p -> nodeIndexOfLeader(c, p) == node)
                                .map(TopicPartitionInfo::partition).collect(Collectors.toCollection(TreeSet::new));
                    }
                    long t0 = System.nanoTime();
                    long handOverMs = c.stop(i);
                    long stopped = System.nanoTime();
                    long seqAtStop = load.nextSeq();
                    final int stopping = i;
                    eventually(WITHIN, () -> assertEquals(owned, load.firstAckAfter(stopped, seqAtStop, owned).keySet(),
                            "node " + stopping + "'s partitions acknowledged elsewhere"));
                    Map<Integer, Long> back = load.firstAckAfter(stopped, seqAtStop, owned);
                    long afterStopMs = TimeUnit.NANOSECONDS.toMillis(
                            back.values().stream().mapToLong(x -> x).max().orElse(stopped) - stopped);
                    c.restart(i);
                    final int node = i;
                    try (Admin admin = c.admin(via)) {
                        eventually(WITHIN, () -> {
                            TopicDescription d = served(c, admin, topic);
                            assertTrue(leaderNodes(c, d).contains(node), "node " + node + " leads nothing yet");
                        });
                    }
                    load.awaitMore(1000, WITHIN);
                    Map<Integer, Long> gaps = load.longestGapMs(t0, System.nanoTime());
                    int worst = gaps.entrySet().stream().max(Map.Entry.comparingByValue()).orElseThrow().getKey();
                    figures.add(String.format("node %d: led %s, exited %d ms after SIGTERM, its partitions acked"
                            + " elsewhere within %d ms of exit; longest ack gap over the stop+restart %d ms"
                            + " (partition %d)", i, owned, handOverMs, afterStopMs, gaps.get(worst), worst));
                }
                load.finish();
                assertEquals(List.of(), load.failures, "failed sends");
                long records = load.verifyLog(c.consumerProps(0));
                assertEquals(load.acked(), records, "records in the log vs acknowledged");
                System.out.println("rolling restart under load (" + load.acked() + " records acknowledged):");
                figures.forEach(f -> System.out.println("  " + f));
            }
        } catch (Throwable t) {
            System.err.println("cluster test failed; the nodes' logs:\n" + c.logs());
            throw t;
        }
    }

    /**
     * kafka-reassign-partitions.sh moves a partition's ownership to the broker named (no data
     * copied: everything produced before is read back through the new owner), load balancing
     * leaves it there, --verify reports it complete; kafka-leader-election.sh finds every
     * owner already the preferred leader; assignments kopd cannot honour get Kafka's errors.
     */
    @Test
    void reassignAndElectWithTheKafkaTools() throws Exception {
        KopdCluster c = KopdCluster.start(root, "java-reassign", 3);
        try (c) {
            String topic = "moved";
            try (Admin admin = c.admin(0)) {
                get(admin.createTopics(List.of(new NewTopic(topic, 6, (short) 1))).all());
                served(c, admin, topic);
            }
            Properties pp = c.producerProps();
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
                for (int i = 0; i < 500; i++) {
                    producer.send(new ProducerRecord<>(topic, 0, null, ("v-" + i).getBytes(StandardCharsets.UTF_8)));
                }
                producer.flush();
            }
            TopicPartitionInfo before;
            Node target;
            try (Admin admin = c.admin(1)) {
                before = describe(admin, topic).partitions().get(0);
                int from = c.nodeOf(before.leader());
                target = get(admin.describeCluster().nodes()).stream()
                        .filter(b -> c.nodeOf(b) != from).findFirst().orElseThrow();
            }
            Path plan = root.resolve("plan.json");
            java.nio.file.Files.writeString(plan, "{\"version\":1,\"partitions\":[{\"topic\":\"" + topic
                    + "\",\"partition\":0,\"replicas\":[" + target.id() + "]}]}");
            String tool = Util.peerTool("kafka-reassign-partitions.sh").toString();
            Util.ToolResult r = Util.runTool(root, 60, null, List.of(tool, "--bootstrap-server", c.nodes.get(1).bootstrap(),
                    "--reassignment-json-file", plan.toString(), "--execute"));
            assertEquals(0, r.status(), r.describe());
            try (Admin admin = c.admin(2)) {
                eventually(WITHIN, () -> {
                    TopicPartitionInfo now = describe(admin, topic).partitions().get(0);
                    assertEquals(target.id(), now.leader().id(), "partition 0 led by " + now.leader());
                });
            }
            r = Util.runTool(root, 60, null, List.of(tool, "--bootstrap-server", c.nodes.get(2).bootstrap(),
                    "--reassignment-json-file", plan.toString(), "--verify", "--preserve-throttles"));
            assertEquals(0, r.status(), r.describe());
            assertTrue(r.out().contains("is completed"), r.describe());

            // Served by the new owner: the records written before the move, then new ones.
            Properties cp = c.consumerProps(0);
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
                producer.send(new ProducerRecord<>(topic, 0, null, "after".getBytes(StandardCharsets.UTF_8))).get();
            }
            try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp)) {
                TopicPartition tp = new TopicPartition(topic, 0);
                consumer.assign(List.of(tp));
                consumer.seekToBeginning(List.of(tp));
                List<String> got = new ArrayList<>();
                long deadline = System.nanoTime() + WITHIN.toNanos();
                while (got.size() < 501 && System.nanoTime() < deadline) {
                    consumer.poll(Duration.ofMillis(200)).forEach(x -> got.add(new String(x.value(), StandardCharsets.UTF_8)));
                }
                assertEquals(501, got.size());
                assertEquals("v-0", got.get(0));
                assertEquals("after", got.get(500));
            }

            // Load balancing leaves the reassigned partition where it was put.
            Thread.sleep(1500);
            try (Admin admin = c.admin(0)) {
                assertEquals(target.id(), describe(admin, topic).partitions().get(0).leader().id());
                assertTrue(Util.failure(admin.alterPartitionReassignments(Map.of(new TopicPartition(topic, 1),
                        java.util.Optional.of(new org.apache.kafka.clients.admin.NewPartitionReassignment(
                                List.of(target.id(), before.leader().id()))))).all())
                        instanceof org.apache.kafka.common.errors.InvalidReplicationFactorException);
                assertTrue(Util.failure(admin.alterPartitionReassignments(Map.of(new TopicPartition(topic, 1),
                        java.util.Optional.of(new org.apache.kafka.clients.admin.NewPartitionReassignment(
                                List.of(999_999))))).all())
                        instanceof org.apache.kafka.common.errors.InvalidReplicaAssignmentException);
                assertTrue(get(admin.listPartitionReassignments().reassignments()).isEmpty());
            }

            r = Util.runTool(root, 60, null, List.of(Util.peerTool("kafka-leader-election.sh").toString(),
                    "--bootstrap-server", c.nodes.get(0).bootstrap(), "--election-type", "PREFERRED",
                    "--all-topic-partitions"));
            assertEquals(0, r.status(), r.describe());
        } catch (Throwable t) {
            System.err.println("cluster test failed; the nodes' logs:\n" + c.logs());
            throw t;
        }
    }
}
