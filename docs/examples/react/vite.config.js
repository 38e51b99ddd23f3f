import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// base "./": the built files work from any directory of any static server.
export default defineConfig({ plugins: [react()], base: "./" });
