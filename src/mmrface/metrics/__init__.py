"""mmrface.metrics"""
