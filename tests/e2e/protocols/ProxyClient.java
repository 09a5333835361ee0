// Java's HttpClient through the sidecar, for tests/e2e/protocols/java.rs. The proxy comes
// from -Dhttp.proxyHost/-Dhttps.proxyHost (here in JAVA_TOOL_OPTIONS), the sidecar's CA from
// -Djavax.net.ssl.trustStore, as the README's client guide says. Prints one line per URL:
// STATUS VERSION BODY.
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class ProxyClient {
    public static void main(String[] args) throws Exception {
        HttpClient client = HttpClient.newHttpClient();
        for (String url : args) {
            HttpRequest request = HttpRequest.newBuilder(URI.create(url))
                .header("Authorization", "Bearer {/auth_token}")
                .build();
            HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
            System.out.println(response.statusCode() + " " + response.version() + " " + response.body());
        }
    }
}
