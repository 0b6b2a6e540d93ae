/// <reference types="vitest/config" />
import { fileURLToPath, URL } from 'node:url'
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

const server = process.env.WORKBENCH_DEV_SERVER ?? 'http://127.0.0.1:8080'

export default defineConfig({
  base: '/',
  plugins: [vue()],
  resolve: {
    alias: { '@': fileURLToPath(new URL('./src', import.meta.url)) },
  },
  server: {
    proxy: {
      // SSE answers must not be buffered by the proxy; http-proxy streams them as they come.
      '/api': { target: server, changeOrigin: false },
      '/healthz': { target: server },
      '/readyz': { target: server },
    },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    chunkSizeWarningLimit: 1500,
    rollupOptions: {
      output: {
        manualChunks(id) {
          if (id.includes('node_modules/element-plus') || id.includes('node_modules/@element-plus')) return 'element-plus'
          if (id.includes('node_modules/highlight.js')) return 'highlight'
          // Charts only load with the training pages that draw them.
          if (/node_modules\/(echarts|zrender|vue-echarts)\//.test(id)) return 'echarts'
          if (id.includes('node_modules/')) return 'vendor'
        },
      },
    },
  },
  test: {
    environment: 'jsdom',
    include: ['tests/unit/**/*.spec.ts'],
    restoreMocks: true,
  },
})
