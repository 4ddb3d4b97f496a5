package kopd.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * kopd driven by other real Kafka peers: Apache Kafka's kafka-topics.sh and kcat
 * (both installed by scripts/install-peers.sh).
 */
class PeerToolsTest {
    @TempDir
    static Path dataDir;

    @TempDir
    static Path scratch;

    static Kopd kopd;

    @BeforeAll
    static void startKopd() throws Exception {
        kopd = Kopd.start(dataDir, 2);
    }

    @AfterAll
    static void stopKopd() {
        if (kopd != null) {
            kopd.close();
        }
    }

    static Util.ToolResult run(long timeoutSeconds, List<String> cmd) throws Exception {
        return Util.runTool(scratch, timeoutSeconds, null, cmd);
    }

    static Path peerTool(String name) {
        return Util.peerTool(name);
    }

    static Util.ToolResult kafkaTopics(String... args) throws Exception {
        List<String> cmd = new ArrayList<>();
        cmd.add(peerTool("kafka-topics.sh").toString());
        cmd.add("--bootstrap-server");
        cmd.add(kopd.bootstrap());
        cmd.addAll(List.of(args));
        return run(90, cmd);
    }

    @Test
    void kafkaTopicsCliCreateListDescribe() throws Exception {
        Util.ToolResult created = kafkaTopics("--create", "--topic", "clitopic", "--partitions", "8");
        assertEquals(0, created.status(), "kafka-topics --create\n" + created.describe());
        assertTrue(created.out().contains("Created topic clitopic"), created.describe());

        Util.ToolResult listed = kafkaTopics("--list");
        assertEquals(0, listed.status(), "kafka-topics --list\n" + listed.describe());
        assertTrue(listed.out().lines().anyMatch("clitopic"::equals), listed.describe());

        Util.ToolResult described = kafkaTopics("--describe", "--topic", "clitopic");
        assertEquals(0, described.status(), "kafka-topics --describe\n" + described.describe());
        String out = described.out();
        Matcher count = Pattern.compile("PartitionCount:\\s*(\\d+)").matcher(out);
        assertTrue(count.find(), "no PartitionCount in\n" + out);
        assertEquals(8, Integer.parseInt(count.group(1)), out);
        Matcher rf = Pattern.compile("ReplicationFactor:\\s*(\\d+)").matcher(out);
        assertTrue(rf.find(), "no ReplicationFactor in\n" + out);
        assertEquals(1, Integer.parseInt(rf.group(1)), "default replication factor\n" + out);

        Pattern line = Pattern.compile(
                "Topic:\\s*clitopic\\s+Partition:\\s*(\\d+)\\s+Leader:\\s*(-?\\d+)\\s+Replicas:\\s*([\\d,]*)\\s+Isr:\\s*([\\d,]*)");
        Map<Integer, Integer> leaders = new TreeMap<>();
        for (String l : out.split("\n")) {
            Matcher m = line.matcher(l);
            if (m.find()) {
                int leader = Integer.parseInt(m.group(2));
                leaders.put(Integer.parseInt(m.group(1)), leader);
                assertEquals(String.valueOf(leader), m.group(3), "replicas in: " + l);
                assertEquals(String.valueOf(leader), m.group(4), "isr in: " + l);
            }
        }
        assertEquals(Set.of(0, 1, 2, 3, 4, 5, 6, 7), leaders.keySet(), "partitions described\n" + out);
        assertEquals(Set.of(0, 1), new TreeSet<>(leaders.values()), "leaders\n" + out);

        Util.ToolResult deleted = kafkaTopics("--delete", "--topic", "clitopic");
        assertEquals(0, deleted.status(), "kafka-topics --delete\n" + deleted.describe());
        Util.ToolResult after = kafkaTopics("--list");
        assertEquals(0, after.status(), after.describe());
        assertTrue(after.out().lines().noneMatch("clitopic"::equals), "deleted topic listed\n" + after.describe());
    }

    @Test
    void kcatListsBothBrokers() throws Exception {
        Util.ToolResult r = run(30, List.of("kcat", "-b", kopd.bootstrap(), "-L", "-m", "10"));
        assertEquals(0, r.status(), "kcat -L\n" + r.describe());
        Matcher count = Pattern.compile("(\\d+) brokers:").matcher(r.out());
        assertTrue(count.find(), "no broker count in\n" + r.out());
        assertEquals(2, Integer.parseInt(count.group(1)), r.out());
        Map<Integer, String> brokers = new TreeMap<>();
        Matcher b = Pattern.compile("broker (\\d+) at ([^\\s:]+):(\\d+)").matcher(r.out());
        while (b.find()) {
            brokers.put(Integer.parseInt(b.group(1)), b.group(2) + ":" + b.group(3));
        }
        assertEquals(Map.of(0, "127.0.0.1:" + kopd.port, 1, "127.0.0.1:" + (kopd.port + 1)), brokers,
                "kcat brokers\n" + r.out());
    }
}
