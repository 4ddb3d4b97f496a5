package kopd.it;

import static kopd.it.Util.describe;
import static kopd.it.Util.eventually;
import static kopd.it.Util.get;
import static kopd.it.Util.leaders;
import static kopd.it.Util.listTopics;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.config.ConfigResource;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Topic metadata survives a restart on the same data directory. */
class RestartTest {
    @TempDir
    Path dataDir;

    private Kopd kopd;

    @AfterEach
    void cleanup() {
        if (kopd != null) {
            kopd.close();
        }
    }

    private record Snapshot(Uuid id, Map<Integer, Integer> leaders) {}

    private Snapshot createTopic(String name, int partitions, Map<String, String> configs) throws Exception {
        try (Admin admin = kopd.admin()) {
            get(admin.createTopics(List.of(new NewTopic(name, partitions, (short) 1).configs(configs))).all());
            TopicDescription d = describe(admin, name);
            assertEquals(partitions, d.partitions().size());
            assertNotEquals(Uuid.ZERO_UUID, d.topicId());
            return new Snapshot(d.topicId(), leaders(d));
        }
    }

    /** A SIGTERM'd kopd finishes in-flight work and exits 0 by itself. */
    private void assertCleanExit(int status) {
        assertEquals(0, status, "kopd exit status after SIGTERM\n" + kopd.logTail());
    }

    @Test
    void topicIdAndLeadersSurviveRestart() throws Exception {
        kopd = Kopd.start(dataDir, 2);
        int port = kopd.port;
        Snapshot before = createTopic("r", 8, Map.of("retention.ms", "1000"));
        assertEquals(Set.of(0, 1), Set.copyOf(before.leaders().values()), "leaders before restart");

        assertCleanExit(kopd.stop());

        kopd = Kopd.start(dataDir, 2, port);
        try (Admin admin = kopd.admin()) {
            eventually(Duration.ofSeconds(5), () -> assertTrue(listTopics(admin).contains("r"), "topic r after restart"));
            TopicDescription d = describe(admin, "r");
            assertEquals(before.id(), d.topicId(), "topic id after restart");
            assertEquals(before.leaders(), leaders(d), "partition -> leader after restart");
            for (TopicPartitionInfo p : d.partitions()) {
                assertEquals(List.of(p.leader().id()),
                        p.replicas().stream().map(Node::id).collect(Collectors.toList()), "replicas");
            }
            ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, "r");
            String retention = get(admin.describeConfigs(List.of(r)).all()).get(r).get("retention.ms").value();
            assertEquals("1000", retention, "topic config override after restart");
        }
    }

    @Test
    void restartWithOneCoreReassignsLeadersToBroker0() throws Exception {
        kopd = Kopd.start(dataDir, 2);
        Snapshot before = createTopic("shrink", 8, Map.of());
        assertEquals(Set.of(0, 1), Set.copyOf(before.leaders().values()), "leaders with 2 cores");
        assertCleanExit(kopd.stop());

        kopd = Kopd.start(dataDir, 1);
        try (Admin admin = kopd.admin()) {
            assertEquals(1, get(admin.describeCluster().nodes()).size(), "one broker with --cores 1");
            eventually(Duration.ofSeconds(5), () -> assertTrue(listTopics(admin).contains("shrink"), "topic after restart"));
            TopicDescription d = describe(admin, "shrink");
            assertEquals(before.id(), d.topicId(), "topic id after restart");
            assertEquals(8, d.partitions().size(), "partition count after restart");
            Map<Integer, Integer> after = leaders(d);
            assertEquals(Set.of(0), Set.copyOf(after.values()), "all leaders on broker 0: " + after);
            for (TopicPartitionInfo p : d.partitions()) {
                assertEquals(List.of(0), p.replicas().stream().map(Node::id).collect(Collectors.toList()),
                        "replicas of partition " + p.partition());
                assertEquals(List.of(0), p.isr().stream().map(Node::id).collect(Collectors.toList()),
                        "isr of partition " + p.partition());
            }
        }
    }
}
