package jwtguard;

import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.util.Collections;

/**
 * Answers every request with what the container made of it. web.xml maps one instance per
 * handler (init-param "handler"); the instance on "/" has none and answers 404.
 */
public class EchoServlet extends HttpServlet {
    @Override
    protected void service(HttpServletRequest req, HttpServletResponse resp) throws IOException {
        String handler = getInitParameter("handler");
        // The path the container routed on: decoded, ";params" dropped, dot segments resolved.
        String path = req.getServletPath() + (req.getPathInfo() == null ? "" : req.getPathInfo());
        StringBuilder headers = new StringBuilder("{");
        for (String name : Collections.list(req.getHeaderNames())) {
            if (headers.length() > 1) headers.append(',');
            headers.append(json(name.toLowerCase())).append(':').append(json(req.getHeader(name)));
        }
        headers.append('}');
        String body = "{\"handler\":" + json(handler)
                + ",\"method\":" + json(req.getMethod())
                + ",\"path\":" + json(path)
                + ",\"raw_path\":" + json(req.getRequestURI())
                + ",\"headers\":" + headers
                + ",\"client_id\":" + json(req.getHeader("X-Client-Id"))
                + ",\"client_id_underscore\":" + json(req.getHeader("x_client_id")) + "}";
        resp.setStatus(handler == null ? 404 : 200);
        resp.setContentType("application/json");
        resp.setCharacterEncoding("UTF-8");
        resp.getWriter().write(body);
    }

    private static String json(String s) {
        if (s == null) return "null";
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') out.append('\\').append(c);
            else if (c < 0x20) out.append(String.format("\\u%04x", (int) c));
            else out.append(c);
        }
        return out.append('"').toString();
    }
}
