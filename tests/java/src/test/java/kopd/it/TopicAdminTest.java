package kopd.it;

import static kopd.it.Util.describe;
import static kopd.it.Util.eventually;
import static kopd.it.Util.failure;
import static kopd.it.Util.get;
import static kopd.it.Util.leaderIds;
import static kopd.it.Util.listTopics;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.CreateTopicsOptions;
import org.apache.kafka.clients.admin.CreateTopicsResult;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicCollection;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidPartitionsException;
import org.apache.kafka.common.errors.InvalidReplicationFactorException;
import org.apache.kafka.common.errors.InvalidTopicException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Topic administration against one kopd with 2 cores (brokers 0 and 1). */
class TopicAdminTest {
    static final Duration SETTLE = Duration.ofSeconds(5);

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

    static void create(String name, int partitions, Map<String, String> configs) throws Exception {
        NewTopic t = new NewTopic(name, partitions, (short) 1).configs(configs);
        get(admin.createTopics(List.of(t)).all());
    }

    @Test
    void createAndDescribeEightPartitions() throws Exception {
        CreateTopicsResult res = admin.createTopics(List.of(new NewTopic("t", 8, (short) 1)));
        get(res.all());
        assertEquals(8, get(res.numPartitions("t")), "CreateTopics response numPartitions");
        assertEquals(1, get(res.replicationFactor("t")), "CreateTopics response replicationFactor");
        Uuid createdId = get(res.topicId("t"));
        assertNotEquals(Uuid.ZERO_UUID, createdId, "CreateTopics response topicId");

        eventually(SETTLE, () -> assertTrue(listTopics(admin).contains("t"), "listTopics contains t"));

        TopicDescription d = describe(admin, "t");
        assertEquals("t", d.name());
        assertFalse(d.isInternal());
        assertNotNull(d.topicId());
        assertNotEquals(Uuid.ZERO_UUID, d.topicId(), "topic id must be non-zero");
        assertEquals(createdId, d.topicId(), "describe and create agree on the topic id");
        assertEquals(8, d.partitions().size(), "partition count");
        Set<Integer> ids = new TreeSet<>();
        for (TopicPartitionInfo p : d.partitions()) {
            ids.add(p.partition());
            Node leader = p.leader();
            assertNotNull(leader, "partition " + p.partition() + " has a leader");
            assertTrue(leader.id() == 0 || leader.id() == 1, "leader id in {0,1}: " + leader);
            assertEquals("127.0.0.1", leader.host());
            assertEquals(kopd.port + leader.id(), leader.port(), "broker i listens on port+i");
            assertEquals(List.of(leader.id()), nodeIds(p.replicas()), "replicas of partition " + p.partition());
            assertEquals(List.of(leader.id()), nodeIds(p.isr()), "isr of partition " + p.partition());
        }
        assertEquals(Set.of(0, 1, 2, 3, 4, 5, 6, 7), ids, "partition ids");
        assertEquals(Set.of(0, 1), leaderIds(d), "leaders spread over both brokers");
    }

    static List<Integer> nodeIds(Collection<Node> nodes) {
        return nodes.stream().map(Node::id).collect(Collectors.toList());
    }

    static Map<String, ConfigEntry> topicConfigs(String topic) throws Exception {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config c = get(admin.describeConfigs(List.of(r)).all()).get(r);
        assertNotNull(c, "describeConfigs returned the resource");
        return c.entries().stream().collect(Collectors.toMap(ConfigEntry::name, e -> e));
    }

    @Test
    void describeTopicConfigsDefaults() throws Exception {
        create("cfg-defaults", 2, Map.of());
        Map<String, ConfigEntry> c = topicConfigs("cfg-defaults");
        for (String k : List.of("retention.ms", "retention.bytes", "cleanup.policy",
                "max.message.bytes", "segment.bytes", "message.timestamp.type")) {
            assertTrue(c.containsKey(k), "describeConfigs has " + k + "; got " + c.keySet());
        }
        assertEquals("604800000", c.get("retention.ms").value(), "retention.ms default");
        assertEquals("delete", c.get("cleanup.policy").value(), "cleanup.policy default");
        assertEquals(-1L, Long.parseLong(c.get("retention.bytes").value()), "retention.bytes default");
        assertTrue(Integer.parseInt(c.get("max.message.bytes").value()) >= 1024 * 1024,
                "max.message.bytes >= 1 MiB: " + c.get("max.message.bytes").value());
        assertTrue(Long.parseLong(c.get("segment.bytes").value()) >= 1024 * 1024,
                "segment.bytes >= 1 MiB: " + c.get("segment.bytes").value());
        assertTrue(Set.of("CreateTime", "LogAppendTime").contains(c.get("message.timestamp.type").value()),
                "message.timestamp.type: " + c.get("message.timestamp.type").value());
        assertNotEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, c.get("retention.ms").source(),
                "retention.ms was not set on the topic");
    }

    @Test
    void topicConfigOverrideIsDescribed() throws Exception {
        create("cfg-override", 1, Map.of("retention.ms", "1000"));
        Map<String, ConfigEntry> c = topicConfigs("cfg-override");
        assertEquals("1000", c.get("retention.ms").value(), "retention.ms override");
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, c.get("retention.ms").source(),
                "source of a topic override");
        assertFalse(c.get("retention.ms").isDefault());
        assertEquals("delete", c.get("cleanup.policy").value(), "other configs keep defaults");
    }

    @Test
    void describeBrokerConfigs() throws Exception {
        ConfigResource r = new ConfigResource(ConfigResource.Type.BROKER, "0");
        Config c = get(admin.describeConfigs(List.of(r)).all()).get(r);
        assertNotNull(c, "describeConfigs returned broker 0");
        assertFalse(c.entries().isEmpty(), "broker 0 has config entries");
    }

    @Test
    void createPartitionsToTwelve() throws Exception {
        create("grow", 8, Map.of());
        get(admin.createPartitions(Map.of("grow", NewPartitions.increaseTo(12))).all());
        eventually(SETTLE, () -> assertEquals(12, describe(admin, "grow").partitions().size(), "partitions after grow"));
        TopicDescription d = describe(admin, "grow");
        Set<Integer> ids = d.partitions().stream().map(TopicPartitionInfo::partition).collect(Collectors.toSet());
        assertEquals(12, ids.size());
        assertTrue(ids.stream().allMatch(i -> i >= 0 && i < 12), "partition ids 0..11: " + ids);
        assertTrue(leaderIds(d).stream().allMatch(i -> i == 0 || i == 1), "leaders: " + leaderIds(d));
    }

    @Test
    void createPartitionsCannotShrink() throws Exception {
        create("noshrink", 4, Map.of());
        Throwable t = failure(admin.createPartitions(Map.of("noshrink", NewPartitions.increaseTo(2))).all());
        assertInstanceOf(InvalidPartitionsException.class, t, "shrinking partitions: " + t);
        assertEquals(4, describe(admin, "noshrink").partitions().size());
    }

    @Test
    void deleteTopicByName() throws Exception {
        create("del-by-name", 2, Map.of());
        eventually(SETTLE, () -> assertTrue(listTopics(admin).contains("del-by-name")));
        get(admin.deleteTopics(List.of("del-by-name")).all());
        eventually(SETTLE, () -> assertFalse(listTopics(admin).contains("del-by-name"),
                "deleted topic still listed"));
    }

    @Test
    void deleteTopicById() throws Exception {
        CreateTopicsResult res = admin.createTopics(List.of(new NewTopic("del-by-id", 2, (short) 1)));
        get(res.all());
        Uuid id = describe(admin, "del-by-id").topicId();
        assertNotEquals(Uuid.ZERO_UUID, id);
        get(admin.deleteTopics(TopicCollection.ofTopicIds(List.of(id))).all());
        eventually(SETTLE, () -> assertFalse(listTopics(admin).contains("del-by-id"),
                "topic deleted by id still listed"));
    }

    @Test
    void invalidTopicNamesAreRejected() throws Exception {
        for (String bad : List.of("bad name!", "..", ".", "x".repeat(250))) {
            Throwable t = failure(admin.createTopics(List.of(new NewTopic(bad, 1, (short) 1))).all());
            assertInstanceOf(InvalidTopicException.class, t, "creating '" + bad + "': " + t);
        }
        Set<String> names = listTopics(admin);
        assertFalse(names.contains("bad name!") || names.contains(".."), "invalid topic was created: " + names);
    }

    @Test
    void creatingAnExistingTopicFails() throws Exception {
        create("dup", 3, Map.of());
        Throwable t = failure(admin.createTopics(List.of(new NewTopic("dup", 3, (short) 1))).all());
        assertInstanceOf(TopicExistsException.class, t, "second create: " + t);
        assertEquals(3, describe(admin, "dup").partitions().size());
    }

    @Test
    void replicationFactorAboveBrokerCountFails() throws Exception {
        Throwable t = failure(admin.createTopics(List.of(new NewTopic("rf3", 1, (short) 3))).all());
        assertInstanceOf(InvalidReplicationFactorException.class, t, "rf 3 on 2 brokers: " + t);
        assertFalse(listTopics(admin).contains("rf3"));
    }

    @Test
    void validateOnlyDoesNotCreate() throws Exception {
        CreateTopicsResult res = admin.createTopics(List.of(new NewTopic("validate-only", 3, (short) 1)),
                new CreateTopicsOptions().validateOnly(true));
        get(res.all());
        assertEquals(3, get(res.numPartitions("validate-only")), "validateOnly still reports numPartitions");
        Thread.sleep(500);
        assertFalse(listTopics(admin).contains("validate-only"), "validateOnly created the topic");
        // and it can then really be created
        create("validate-only", 3, Map.of());
        assertEquals(3, describe(admin, "validate-only").partitions().size());
    }

    @Test
    void describeClusterShowsTwoBrokersAndController0() throws Exception {
        DescribeClusterResult c = admin.describeCluster();
        Collection<Node> nodes = get(c.nodes());
        assertEquals(2, nodes.size(), "nodes: " + nodes);
        Map<Integer, Integer> ports = nodes.stream().collect(Collectors.toMap(Node::id, Node::port));
        assertEquals(Map.of(0, kopd.port, 1, kopd.port + 1), ports, "broker ids -> ports");
        for (Node n : nodes) {
            assertEquals("127.0.0.1", n.host());
        }
        Node controller = get(c.controller());
        assertNotNull(controller);
        assertEquals(0, controller.id(), "controller id");
        String clusterId = get(c.clusterId());
        assertNotNull(clusterId, "cluster id");
        assertFalse(clusterId.isEmpty(), "cluster id");
    }
}
